"""Accounts for the dashboard and the relay: ``users`` (passwords, the sign-in brake) and ``setup_link``
(the one-time link that creates the first account in the browser)."""
