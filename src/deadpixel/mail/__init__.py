"""Sending mail: composing tracked messages and delivering them over SMTP."""
