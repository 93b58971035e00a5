"""The tenant web portal: server-rendered pages over keys.services and keys.selectors."""
