from hypothesis import settings

# JIT compilation makes the first example slow; deadlines would only measure that.
settings.register_profile("book", deadline=None, max_examples=60)
settings.load_profile("book")
