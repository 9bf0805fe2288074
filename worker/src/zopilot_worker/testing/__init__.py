"""Builders of test inputs shared by tests, benchmarks and the local demo.

Submodules import their heavy dependencies (torch, transformers) themselves;
importing this package stays cheap.
"""
