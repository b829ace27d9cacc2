"""Deciding before anything loads: which nodes there are (inventory, Bonjour), what each can hold,
which layers and backend each stage gets, which addresses neighbours use. Pure functions where a
decision is made, so they are tested without sockets."""
