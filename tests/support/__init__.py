"""Helpers the tests share (stand-ins, harnesses, waiting, hostile input); no tests here."""
