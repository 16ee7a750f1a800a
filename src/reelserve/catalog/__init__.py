"""reelserve.catalog"""
