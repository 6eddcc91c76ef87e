"""Bounces and complaints: VERP envelope senders, reading reports, recording them, suppressing addresses."""
