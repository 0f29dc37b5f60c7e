"""One module per ``segadv`` subcommand (or small family of them); each registers on ``cli.app``.

Command modules import torch and the heavy parts of ``core`` inside the command functions, so that
``segadv --help`` stays fast.
"""
