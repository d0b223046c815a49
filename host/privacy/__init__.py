# Runs on CPython (host): member personal data — the site data key, encryption at rest, the phone blind index, masking.
"""Personal data of members (issue #15, docs/operators.md "Privacy").

``mask`` normalises and masks; ``keyfile`` reads and writes the site data key file (outside
the database); ``vault`` seals personal fields with AES-GCM and computes the phone blind
index; ``upgrade`` encrypts plain-text rows of an older database and rotates the data key.
"""
