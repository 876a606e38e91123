FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md beat_schedule.py ./
COPY wxtasks ./wxtasks
COPY workers ./workers
RUN pip install --no-cache-dir . && useradd --create-home wxtasks
USER wxtasks
CMD ["wxtasks", "--help"]
