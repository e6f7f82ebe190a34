"""Storage: SQLAlchemy models and a real connection pool (Postgres when a URL is given, SQLite otherwise).

Blocking SQLAlchemy runs in worker threads (``asyncio.to_thread``); the pool is the thing under test, so its
size, overflow and timeout come straight from the settings and are exported as gauges.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    create_engine,
    event,
    select,
    text,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, ProgrammingError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from sut.config import Settings

PASSWORD_ITERATIONS = 1000  # cheap on purpose: login is load-tested, this is not a password vault


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    email: Mapped[str] = mapped_column(String(254), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    tier: Mapped[str] = mapped_column(String(10), default="free")
    created_at: Mapped[float] = mapped_column(Float, default=time.time)


class Thread(Base):
    __tablename__ = "threads"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user: Mapped[str] = mapped_column(String(254), index=True)
    title: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[float] = mapped_column(Float, default=time.time)


class Message(Base):
    __tablename__ = "messages"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    thread_id: Mapped[int] = mapped_column(ForeignKey("threads.id"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    client_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)


class Upload(Base):
    __tablename__ = "uploads"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user: Mapped[str] = mapped_column(String(254), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float, default=time.time)


class Store:
    """The engine, its pool and the queries the services need."""

    def __init__(self, settings: Settings, name: str) -> None:
        self._tempdir: str | None = None
        url = settings.database_url
        connect_args: dict[str, Any] = {}
        if not url:
            # the launcher's data folder outlives a restarted service (and the launcher removes it, also after a
            # SIGKILL); alone, a service keeps its SQLite file in a temporary folder of its own.
            folder = settings.data_dir
            if not folder:
                folder = self._tempdir = tempfile.mkdtemp(prefix=f"sut-{name}-")
            url = f"sqlite:///{Path(folder) / (name + '.db')}"
        if url.startswith("sqlite"):
            connect_args = {"check_same_thread": False, "timeout": 30}
        elif url.startswith("postgresql://"):
            url = url.replace("postgresql://", "postgresql+psycopg://", 1)
        self.kind = "sqlite" if url.startswith("sqlite") else url.split(":", 1)[0]
        self.engine = create_engine(
            url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_timeout=settings.db_pool_timeout,
            pool_pre_ping=True,
            connect_args=connect_args,
        )
        if self.kind == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._leaked: list[Connection] = []
        self._leak_lock = threading.Lock()

    def create_schema(self, tables: list[str]) -> None:
        wanted = [Base.metadata.tables[name] for name in tables]
        for attempt in range(3):
            try:
                Base.metadata.create_all(self.engine, tables=wanted)
                return
            except (IntegrityError, ProgrammingError):
                # another process created the same tables at the same moment (one shared Postgres)
                if attempt == 2:
                    raise
                time.sleep(0.2)

    def close(self) -> None:
        for conn in self._leaked:
            conn.close()
        self.engine.dispose()
        if self._tempdir:
            shutil.rmtree(self._tempdir, ignore_errors=True)

    # --- pool gauges and faults ---
    def pool_stats(self) -> dict[str, float]:
        pool = self.engine.pool
        return {
            "size": float(pool.size()),
            "checked_out": float(pool.checkedout()),
            "overflow": float(max(pool.overflow(), 0)),
            "capacity": float(pool.size() + max(self.engine.pool._max_overflow, 0)),  # type: ignore[attr-defined]
        }

    def leak_connection(self) -> None:
        """The pool-leak fault: check a connection out and keep it forever (blocks, then fails, once exhausted)."""
        conn = self.engine.connect()
        with self._leak_lock:
            self._leaked.append(conn)

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    # --- users (auth) ---
    def get_user(self, email: str) -> User | None:
        with self.sessions() as session:
            return session.get(User, email)

    def create_user(self, email: str, password_hash: str, tier: str = "free") -> User | None:
        """The new user, or None when someone else created the same email first."""
        user = User(email=email, password_hash=password_hash, tier=tier, created_at=time.time())
        with self.sessions() as session:
            session.add(user)
            try:
                session.commit()
            except IntegrityError:
                return None
        return user

    def set_tier(self, email: str, tier: str) -> User | None:
        with self.sessions() as session:
            user = session.get(User, email)
            if user is None:
                return None
            user.tier = tier
            session.commit()
            return user

    # --- threads and messages (backend) ---
    def create_thread(self, user: str, title: str) -> Thread:
        with self.sessions() as session:
            thread = Thread(user=user, title=title, created_at=time.time())
            session.add(thread)
            session.commit()
            return thread

    def list_threads(self, user: str, limit: int) -> list[Thread]:
        with self.sessions() as session:
            rows = session.scalars(select(Thread).where(Thread.user == user).order_by(Thread.id.desc()).limit(limit))
            return list(rows)

    def owned_thread(self, user: str, thread_id: int) -> Thread | None:
        with self.sessions() as session:
            thread = session.get(Thread, thread_id)
            return thread if thread is not None and thread.user == user else None

    def add_message(
        self, user: str, thread_id: int | None, role: str, content: str, client_id: str | None
    ) -> int | None:
        """Store a message; thread_id None = the user's default thread. Returns the thread id, None if not theirs."""
        with self.sessions() as session:
            if thread_id is None:
                thread = session.scalars(
                    select(Thread).where(Thread.user == user, Thread.title == "default").order_by(Thread.id).limit(1)
                ).first()
                if thread is None:
                    thread = Thread(user=user, title="default", created_at=time.time())
                    session.add(thread)
                    session.flush()
            else:
                thread = session.get(Thread, thread_id)
                if thread is None or thread.user != user:
                    return None
            session.add(
                Message(thread_id=thread.id, role=role, content=content, client_id=client_id, created_at=time.time())
            )
            session.commit()
            return thread.id

    def messages(self, thread_id: int, limit: int) -> list[Message]:
        """The latest ``limit`` messages of a thread, oldest first."""
        with self.sessions() as session:
            rows = session.scalars(
                select(Message).where(Message.thread_id == thread_id).order_by(Message.id.desc()).limit(limit)
            )
            return list(reversed(list(rows)))

    def add_upload(self, upload_id: str, user: str, filename: str, size: int, sha256: str) -> None:
        with self.sessions() as session:
            session.add(
                Upload(id=upload_id, user=user, filename=filename, size=size, sha256=sha256, created_at=time.time())
            )
            session.commit()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
