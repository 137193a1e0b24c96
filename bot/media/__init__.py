"""Pictures and voice from followers: fetching (with an SSRF guard), converting, transcribing."""
