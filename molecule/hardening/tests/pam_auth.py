"""Authenticate USER with PASSWORD through the PAM service SERVICE as a login program does
(pam_authenticate, then pam_acct_mgmt), and print the PAM result: its number and its name.

Run on the hardened host by test_default.py (python3 -c, no file copied): SERVICE USER PASSWORD
are the last three arguments. PAM through ctypes, since su and login need a terminal."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

PROMPTS = (1, 2)  # PAM_PROMPT_ECHO_OFF, PAM_PROMPT_ECHO_ON


class Message(ctypes.Structure):
    _fields_ = [("msg_style", ctypes.c_int), ("msg", ctypes.c_char_p)]


class Response(ctypes.Structure):
    _fields_ = [("resp", ctypes.c_void_p), ("resp_retcode", ctypes.c_int)]


CONV = ctypes.CFUNCTYPE(
    ctypes.c_int,
    ctypes.c_int,
    ctypes.POINTER(ctypes.POINTER(Message)),
    ctypes.POINTER(ctypes.POINTER(Response)),
    ctypes.c_void_p,
)


class Conv(ctypes.Structure):
    _fields_ = [("conv", CONV), ("appdata_ptr", ctypes.c_void_p)]


def main(service: str, user: str, password: str) -> str:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.calloc.restype = ctypes.c_void_p
    libc.strdup.restype = ctypes.c_void_p
    pam = ctypes.CDLL(ctypes.util.find_library("pam"))
    pam.pam_strerror.restype = ctypes.c_char_p

    @CONV
    def answer(count, messages, responses, _data):
        # PAM frees what it is given: the answers are malloc'ed.
        block = libc.calloc(count, ctypes.sizeof(Response))
        responses[0] = ctypes.cast(block, ctypes.POINTER(Response))
        for i in range(count):
            if messages[i].contents.msg_style in PROMPTS:
                responses[0][i].resp = libc.strdup(password.encode())
        return 0

    handle = ctypes.c_void_p()
    conv = Conv(answer, None)
    rc = pam.pam_start(service.encode(), user.encode(), ctypes.byref(conv), ctypes.byref(handle))
    if rc == 0:
        rc = pam.pam_authenticate(handle, 0)
    if rc == 0:
        rc = pam.pam_acct_mgmt(handle, 0)
    name = pam.pam_strerror(handle, rc).decode()
    pam.pam_end(handle, rc)
    return f"{rc} {name}"


if __name__ == "__main__":
    print(main(*sys.argv[-3:]))
