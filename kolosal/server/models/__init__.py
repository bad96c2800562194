"""The models a server knows: their records and the registry API
(``registry``), the memory-budget decisions (``memory_policy``), the
background upkeep thread (``upkeep``) and which model files may be loaded
(``paths``)."""
