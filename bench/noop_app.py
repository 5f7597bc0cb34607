"""The baseline for end-to-end throughput: a Flask app that answers 200 and does nothing."""

from flask import Flask

app = Flask("noop")


@app.route("/auth-request", methods=["GET"])
def noop():
    return ""
