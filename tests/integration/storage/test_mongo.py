"""FerretDB speaks enough MongoDB for the task mirror: the operations gentask.storage relies on."""

from __future__ import annotations

import uuid

import pymongo
import pytest
from pymongo.errors import DuplicateKeyError


@pytest.fixture
def db(cluster):
    client = pymongo.MongoClient(cluster.mongo_url, serverSelectionTimeoutMS=5000)
    name = f"t_{uuid.uuid4().hex[:8]}"
    yield client[name]
    client.drop_database(name)
    client.close()


def test_insert_find_filter_sort_skip_limit(db):
    tasks = db.tasks
    tasks.insert_many([{"_id": f"t{i}", "user": "u1" if i % 2 else "u2", "type": "image", "created": i}
                       for i in range(10)])
    page = list(tasks.find({"user": "u1"}).sort([("created", pymongo.DESCENDING)]).skip(1).limit(2))
    assert [d["_id"] for d in page] == ["t7", "t5"]
    assert tasks.count_documents({"user": "u1"}) == 5


def test_upsert_and_conditional_update(db):
    tasks = db.tasks
    tasks.update_one({"_id": "a"}, {"$set": {"phase": "Queued", "rank": 1}}, upsert=True)
    tasks.update_one({"_id": "a", "rank": {"$lt": 3}}, {"$set": {"phase": "Succeeded", "rank": 3}}, upsert=False)
    stale = tasks.update_one({"_id": "a", "rank": {"$lt": 2}}, {"$set": {"phase": "Running", "rank": 2}})
    assert stale.matched_count == 0
    assert tasks.find_one({"_id": "a"})["phase"] == "Succeeded"


def test_unique_index_refuses_duplicates(db):
    tasks = db.tasks
    tasks.create_index([("uid", pymongo.ASCENDING)], unique=True)
    tasks.insert_one({"uid": "x"})
    with pytest.raises(DuplicateKeyError):
        tasks.insert_one({"uid": "x"})
    assert any(ix.get("unique") for ix in tasks.list_indexes())
