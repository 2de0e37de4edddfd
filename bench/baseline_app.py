"""The baseline the benchmarks compare against: a minimal FastAPI app in the seed's manner.

Sessions live in a dict; create scans every session to apply the per-namespace limit, as the
seed's router does. The socket only counts frames. Serve with
``uvicorn bench.baseline_app:app``.
"""

import uuid
from datetime import UTC, datetime

from fastapi import FastAPI, HTTPException, WebSocket, WebSocketDisconnect
from pydantic import BaseModel

app = FastAPI()
_sessions: dict[str, dict] = {}
_frames = {"count": 0}
MAX_SESSIONS = 5


class SessionCreate(BaseModel):
    namespace_id: str
    key_hash: str
    device_type: str = "web"


@app.post("/api/v1/sessions")
async def create(body: SessionCreate):
    live = [s for s in _sessions.values() if s["namespace_id"] == body.namespace_id]
    if len(live) >= MAX_SESSIONS:
        raise HTTPException(429, f"Maximum {MAX_SESSIONS} concurrent sessions allowed")
    sid = str(uuid.uuid4())
    _sessions[sid] = {
        "id": sid, "namespace_id": body.namespace_id, "status": "created",
        "created_at": datetime.now(UTC).isoformat(), "device_type": body.device_type,
    }  # fmt: skip
    return {**_sessions[sid], "websocket_url": f"ws://host/ws/voice?session_id={sid}"}


@app.get("/api/v1/sessions/{sid}")
async def get(sid: str):
    if sid not in _sessions:
        raise HTTPException(404, "Session not found")
    return {**_sessions[sid], "websocket_url": f"ws://host/ws/voice?session_id={sid}"}


@app.get("/api/v1/sessions/{sid}/stats")
async def stats(sid: str):
    if sid not in _sessions:
        raise HTTPException(404, "Session not found")
    return {"session_id_truncated": sid[:8], "status": "created", "audio_chunks_received": 0}


@app.post("/_preload")
async def preload(n: int):
    for i in range(n):
        sid = str(uuid.uuid4())
        _sessions[sid] = {"id": sid, "namespace_id": f"pre-{i}", "status": "created",
                          "created_at": "", "device_type": "web"}  # fmt: skip
    return {"sessions": len(_sessions)}


@app.get("/_frames")
async def frames():
    return _frames


@app.websocket("/ws/voice")
async def voice(ws: WebSocket):
    await ws.accept()
    try:
        while True:
            await ws.receive_bytes()
            _frames["count"] += 1
    except WebSocketDisconnect:
        pass
