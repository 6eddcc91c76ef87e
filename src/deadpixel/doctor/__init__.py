"""``deadpixel doctor``: check a deployment and say in plain words what is wrong and how to fix it.

Each check is a small function of a ``Context`` returning one ``Result``; ``runner`` runs them in order and
``output`` prints them. Checks import what they need when they run, so the command line stays fast.
"""
