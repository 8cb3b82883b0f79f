-- wrk script for benchmarks/load_test.py --wrk: POST the request body in the file $CUREFLOW_WRK_BODY.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open(os.getenv("CUREFLOW_WRK_BODY"), "rb"))
wrk.body = f:read("*a")
f:close()
