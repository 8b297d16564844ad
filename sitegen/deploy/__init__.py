"""Deploying a built site (issue 15): host profiles and their limits (``hosts``), the service
worker and web app manifest (``offline``), GitHub Pages by git (``ghpages``) and by GitHub
Actions (``workflow``)."""
