"""The Ray side: node actors, the head, the analytics driver, the session and ``doreisa run``."""
