"""/api/environments/{id}/companies: companies (Segment groups) and their members."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from integration.admin import params
from integration.admin.common import AdminRequest, environment, unit_of_work
from integration.admin.schemas import CompanyDetail, CompanyOut, CompanyPage, UserOut
from integration.http import pagination
from integration.http.openapi import Param, operation
from integration.http.pagination import PAGE_PARAMS
from integration.http.responses import JSON
from integration.inbound import queries


@operation(
    summary="List companies, newest first",
    scope="read",
    response=CompanyPage,
    query=(Param("trait", "key:value; the trait's value as text equals value"), *PAGE_PARAMS),
)
async def list_companies(request: AdminRequest) -> Response:
    size, cursor = pagination.limit(request), pagination.after_id(request)
    traits = params.trait_filters(request)
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        rows = await queries.list_companies(
            session, env.id, traits=traits, before_id=cursor, limit=size + 1
        )
    items = [
        CompanyOut.model_validate(c, from_attributes=True).model_dump(mode="json") for c in rows
    ]
    last = pagination.last_shown(rows, size)
    return JSON(pagination.page(items, size, [last.id] if last else None))


@operation(summary="A company with its traits and members", response=CompanyDetail, scope="read")
async def read_company(request: AdminRequest) -> Response:
    async with unit_of_work(request) as session:
        env = await environment(session, request)
        found = await queries.company_detail(session, env.id, request.path_params["group_id"])
    detail = CompanyDetail(
        **CompanyOut.model_validate(found.company, from_attributes=True).model_dump(),
        member_count=found.member_count,
        members=[UserOut.model_validate(u, from_attributes=True) for u in found.members],
    )
    return JSON(detail.model_dump(mode="json"))


routes = [
    Route("/environments/{env_id}/companies", list_companies, methods=["GET"]),
    Route("/environments/{env_id}/companies/{group_id}", read_company, methods=["GET"]),
]
