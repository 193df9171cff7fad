"""Tools a run can use: the code interpreter, file search and client-side functions."""
