-- wrk script of the cost ladder's spread rungs (bench/ladder.sh): each request names one
-- of TENANTS tenants (s0 ... s<TENANTS-1>) at random; TENANTS=1 names s0 every time, so
-- that the one-tenant rung pays the same script.
local tenants = tonumber(os.getenv("TENANTS") or "1")
math.randomseed(25)

request = function()
  return wrk.format("GET", "/tenants/s" .. math.random(0, tenants - 1) .. "/token")
end
