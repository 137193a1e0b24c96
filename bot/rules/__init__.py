"""The rule chain a question passes before it is answered, and the check on the answer (issue 4)."""
