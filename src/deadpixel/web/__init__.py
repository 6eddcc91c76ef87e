"""Pages and endpoints served through Starlette: everything off the pixel and click hot paths."""
