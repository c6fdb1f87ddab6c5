"""Errors that cross the line between the library and the commands (rosbags keeps its errors in
their own module too): a command reports each as one line."""
from __future__ import annotations


class UsageError(Exception):
    """Bad input from the user: reported as one line, exit status 2."""


class ModelVerificationError(ValueError):
    """A model directory's files do not match its manifest; the message is one line naming the file."""


class NonFiniteOutput(ValueError):
    """The model produced NaN or inf: the result must not be published as if valid."""


class ContractError(ValueError):
    """A model contract that cannot work with its bags or model: one line naming the key (as
    `heads[1].source`) and the fix."""
