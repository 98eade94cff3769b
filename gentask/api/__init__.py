"""The REST facade (FastAPI): the old Volcengine AI Server's endpoints over GenerationTasks."""
