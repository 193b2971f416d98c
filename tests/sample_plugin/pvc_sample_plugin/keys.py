"""The plugin's ZooKeeper keys::

    /sample/note     one line of text anybody may leave for the cluster's administrators
"""

from __future__ import annotations

from pvc_kernel.sdk import Key

KEYS = [Key("sample.note", "/sample/note", "sample")]
