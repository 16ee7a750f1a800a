"""reelserve.api.runware"""
