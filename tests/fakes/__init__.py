"""Fakes of the outside world (WeChat, LLM providers, WeChat Pay) that speak the real wire protocols.

They are the only fakes in the suite: our own code is always the real thing, driven over loopback HTTP.
"""
