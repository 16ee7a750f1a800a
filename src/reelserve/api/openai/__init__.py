"""reelserve.api.openai"""
