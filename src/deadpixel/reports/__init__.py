"""The read side: every reported number, the CSV exports and hand-made pixels.

What the CLI, the API and the dashboard share, so that each only presents it: ``analytics`` defines every
figure once, ``exports`` streams the same rows as CSV, ``pixels`` makes the one message a user creates by
hand to report on. It reads and writes through ``store`` and sits below every face.
"""
