"""SQLAlchemy ORM model of the py_libs scenario (imported only when SQLAlchemy is)."""

import sqlalchemy
from sqlalchemy import Column, Integer, String

try:  # SQLAlchemy 1.4+
    from sqlalchemy.orm import declarative_base
except ImportError:  # older
    from sqlalchemy.ext.declarative import declarative_base

Base = declarative_base()


class User(Base):
    __tablename__ = "users"
    id = Column(Integer, primary_key=True)
    name = Column(String(40))
    email = Column(String(80))


VERSION = sqlalchemy.__version__
