"""The companion web page (credits, top-ups, web chat) and its JSON API."""
