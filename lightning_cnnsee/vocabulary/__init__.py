"""The torch-free vocabulary every floor shares: tags and the paths made from them (:mod:`.tags`) and the choices of
the options (:mod:`.choices`). Imports nothing but the standard library.
"""
