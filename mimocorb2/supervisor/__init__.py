"""The asyncio supervisor daemon `mimocorb2d` (control plane).

Nothing in the data path imports this package.
"""
