"""reelserve.jobs"""
