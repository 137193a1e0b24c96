"""Model providers: channels behind one interface (a stream of text chunks, then usage)."""
