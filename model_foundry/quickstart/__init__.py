"""The quickstart: the whole workflow on real text fetched from a package registry."""
