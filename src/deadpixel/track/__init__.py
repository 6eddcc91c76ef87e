"""The hot path: answer pixel requests in about a millisecond and lose nothing that was answered."""
