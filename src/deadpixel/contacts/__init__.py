"""The audience: reading contact lists (ours and Mailchimp's exports) and writing them back as CSV."""
