"""The OpenAPI description of the site API, served at /api/v1/openapi.json."""

from __future__ import annotations

from typing import Any

_ERROR = {
    "description": "What is wrong and what to change",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Turbofan federation site API",
        "version": "1",
        "description": "Sites pull work, return results and download models. Authenticate "
        "with the site's credential: 'Authorization: Bearer <credential>'. Raw sensor rows "
        "are never accepted: only counts, statistics and model weights.",
    },
    "servers": [{"url": "/api/v1"}],
    "security": [{"siteCredential": []}],
    "components": {
        "securitySchemes": {"siteCredential": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}},
            },
            "Site": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "status": {"enum": ["active", "paused"]},
                    "data_summary": {"type": ["object", "null"]},
                    "memberships": {"type": "array", "items": {"type": "object"}},
                },
            },
            "DataSummary": {
                "type": "object",
                "required": ["train_rows", "train_engines", "subsets"],
                "properties": {
                    "train_rows": {"type": "integer"},
                    "train_engines": {"type": "integer"},
                    "subsets": {"type": "array", "items": {"type": "string"}},
                },
            },
            "Identity": {
                "type": "object",
                "required": ["public_key"],
                "properties": {
                    "public_key": {
                        "type": "string",
                        "description": "base64 of the site's 32-byte Ed25519 public key",
                    }
                },
            },
            "Work": {
                "type": "object",
                "properties": {
                    "contribution": {"type": "integer"},
                    "federation": {"type": "object"},
                    "round": {
                        "type": "object",
                        "properties": {
                            "id": {"type": "integer"},
                            "number": {"type": "integer"},
                            "kind": {
                                "enum": ["points", "moments", "train", "evaluate", "analytics"]
                            },
                            "deadline": {"type": "string", "format": "date-time"},
                        },
                    },
                    "work": {
                        "type": "object",
                        "description": "'kind'; 'protocol': the stage to answer, the round's "
                        "public parameters and what the stage needs (neighbours' signed "
                        "keys, shares encrypted to this site, the living and dropped sites); "
                        "in the stage that sends the site's input, the task: regimes, query, "
                        "or pipeline, recipe, base64 .npz weights and local training settings "
                        "(and, when the weights are a candidate, 'accepted_weights': the last "
                        "accepted model, to score it against)",
                    },
                },
            },
            "Result": {
                "type": "object",
                "description": "the stage's message: {stage, round, site, ...} with signed "
                "public keys, encrypted shares, the masked vector (base64 words) with "
                "'examples', 'metrics' {seconds} and, when scoring a candidate, 'vote' (1: "
                "worse than the accepted model) with 'vote_signature' (Ed25519, base64), or "
                "revealed shares; in plain mode the "
                "input vector in the clear ('vector', base64 float64 words)",
                "required": ["stage", "round", "site"],
                "properties": {
                    "stage": {
                        "enum": [
                            "advertise_keys",
                            "share_keys",
                            "masked_input",
                            "unmask",
                            "plain_input",
                        ]
                    },
                    "round": {"type": "string"},
                    "site": {"type": "integer"},
                    "examples": {"type": "integer", "minimum": 0},
                    "metrics": {"type": "object"},
                    "vote": {"enum": [0, 1]},
                    "vote_signature": {"type": "string"},
                },
            },
        },
    },
    "paths": {
        "/openapi.json": {
            "get": {
                "summary": "This description",
                "security": [],
                "responses": {"200": {"description": "OK"}},
            }
        },
        "/site": {
            "get": {
                "summary": "Your own site",
                "responses": {"200": _json({"$ref": "#/components/schemas/Site"}), "401": _ERROR},
            }
        },
        "/site/data": {
            "put": {
                "summary": "Report what data your site holds (counts only)",
                "requestBody": {
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/DataSummary"}}
                    }
                },
                "responses": {"200": {"description": "Stored"}, "400": _ERROR, "401": _ERROR},
            }
        },
        "/site/identity": {
            "put": {
                "summary": "Register the key your site signs its secure-aggregation keys with",
                "requestBody": {
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Identity"}}
                    }
                },
                "responses": {"200": {"description": "Stored"}, "400": _ERROR, "401": _ERROR},
            }
        },
        "/work": {
            "get": {
                "summary": "Your next piece of work: the next stage you have not answered",
                "parameters": [
                    {
                        "name": "wait",
                        "in": "query",
                        "required": False,
                        "description": "seconds to wait for work if there is none yet (long "
                        "polling): the answer comes as soon as there is",
                        "schema": {"type": "number", "minimum": 0, "maximum": 25, "default": 0},
                    }
                ],
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/Work"}),
                    "204": {"description": "Nothing to do now"},
                    "400": _ERROR,
                    "401": _ERROR,
                },
            }
        },
        "/contributions/{id}": {
            "post": {
                "summary": "Your result for a piece of work",
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
                ],
                "requestBody": {
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Result"}}
                    }
                },
                "responses": {
                    "200": {"description": "Received"},
                    "400": _ERROR,
                    "401": _ERROR,
                    "404": _ERROR,
                    "409": _ERROR,
                },
            }
        },
        "/federations/{id}/models/{version}": {
            "get": {
                "summary": "Download a global model version (members only)",
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}},
                    {
                        "name": "version",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "integer"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "The .rulmodel file",
                        "content": {"application/zip": {}},
                        "headers": {
                            "X-Model-SHA256": {
                                "description": "The file's SHA-256, to check",
                                "schema": {"type": "string"},
                            },
                            "X-Model-Status": {
                                "description": "candidate (not scored by the sites yet), "
                                "accepted, or rejected by the sites' votes",
                                "schema": {
                                    "type": "string",
                                    "enum": ["candidate", "accepted", "rejected"],
                                },
                            },
                        },
                    },
                    "401": _ERROR,
                    "404": _ERROR,
                },
            }
        },
    },
}
