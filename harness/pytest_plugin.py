"""pytest plugin (entry point ``pytest11``): fixtures for testing your own gateway client code.

Fixtures are added as the parts they start land; see the README.
"""
