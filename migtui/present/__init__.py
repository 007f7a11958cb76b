"""The text an operator reads, shared by the command line and the console: plain strings, never Textual."""
