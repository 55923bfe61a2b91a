"""Database models, sessions, migrations and the repository functions the API and worker share.

Tables are created and changed only by the Alembic migrations in migrations/ (see migrate.py).
"""

from app.db.models import ApiKey, Autoencoder, Base, Checkpoint, Job, Owner, Zoo

__all__ = ["ApiKey", "Autoencoder", "Base", "Checkpoint", "Job", "Owner", "Zoo"]
