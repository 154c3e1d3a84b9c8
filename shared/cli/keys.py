"""`speechflow keys create|list|revoke`: API keys, managed straight in the database the settings point to
(the one command that is not a client of the HTTP API: it is how the first key is made)."""

from __future__ import annotations

import argparse

from rich.console import Console
from sqlalchemy.exc import SQLAlchemyError

from shared.core.config import Settings
from shared.core.db import make_engine, make_sessionmaker, migrate, transaction
from shared.jobs.keys import create_key, list_keys, revoke_key


def manage_keys(args: argparse.Namespace, *, settings: Settings, console: Console) -> int:
    if settings.effective_database_url.startswith("sqlite"):
        migrate(
            settings
        )  # the embedded default creates its database on first use; elsewhere migrations are a deploy step
    engine = make_engine(settings)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            if args.keys_command == "create":
                new = create_key(session=session, name=args.name)
                console.print(f"created key {new.id} ({new.name}); it is shown once, keep it now:")
                print(new.key)
            elif args.keys_command == "list":
                for key in list_keys(session=session):
                    state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
                    print(f"{key.id}\t{key.name}\t{key.created_at:%Y-%m-%d %H:%M}\t{state}")
            elif not revoke_key(session=session, key_id=args.key_id):
                console.print(f"[red]error:[/red] no active key {args.key_id}")
                return 1
            else:
                console.print(f"key {args.key_id} revoked")
    except SQLAlchemyError as error:
        console.print(f"[red]error:[/red] cannot use the database: {error.__class__.__name__}")
        return 2
    finally:
        engine.dispose()
    return 0
