"""What an NPC knows beyond its persona, and what it remembers of the game.

- `embedder`: sentence embeddings (MiniLM as int8 ONNX), one session shared by a Runtime's NPCs.
- `store`: memories with metadata, searched by embedding (numpy exact index or hnswlib).
- `gating`: the game's facts and flags, and the condition language that hides knowledge until it holds.
- `lorebook`: Character Card V2 lorebook entries triggered by keywords in the recent conversation.
- `recall`: per player turn, the lines of the memory note (lore entries, then retrieved memories).
- `summary`: long-term memory: old turns summarised by the NPC's own model into `summary` memories.
"""
