"""The operator's views and actions on a running server, and the SSH manhole that exposes them."""
