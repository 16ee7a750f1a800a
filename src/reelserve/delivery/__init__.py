"""reelserve.delivery"""
