"""Sending tracked mail: one message (``deadpixel send``) or a mail-merge campaign (``campaign send``)."""
