"""reelserve.worker"""
