"""phoenix_lib: the code the Phoenix textbook explains and runs."""
