"""The SMTP relay: mail clients submit here, each recipient's copy gets its own pixel, the upstream sends."""
