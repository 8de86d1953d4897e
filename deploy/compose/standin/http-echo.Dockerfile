# Stand-in for hashicorp/http-echo, for machines that cannot pull (scripts/compose-images.sh
# builds it; never tagged with the official name). Same entrypoint path and flags
# (-listen=:PORT -text=TEXT), same answer: 200 with TEXT and a newline to every request.
ARG BASE
FROM ${BASE}
COPY http-echo.py /http-echo
USER nobody
ENTRYPOINT ["/http-echo"]
