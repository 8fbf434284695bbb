#!/usr/bin/env python3
"""Builds a small AWS estate in a moto server, to try the aws-ec2 collector
without an AWS account:

    .venv/bin/moto_server -H 127.0.0.1 -p 5000 &
    .venv/bin/python examples/moto-estate.py http://127.0.0.1:5000
    AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
      cargo run --features aws -- collect aws-ec2 --regions us-east-1 \
      --endpoint-url http://127.0.0.1:5000

(`tests/run.sh` installs moto into .venv; so does
`python3 -m venv .venv && .venv/bin/pip install -r tests/requirements.txt`.)

One VPC with a public and a private subnet in two zones, an internet gateway,
a NAT gateway, web hosts of `checkout` and `storefront` behind a `web`
security group, database hosts of `ledger` behind a `db` group that admits
the web group on 5432, a data volume, an elastic IP.
"""
import sys

import boto3

url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:5000"
ec2 = boto3.client(
    "ec2",
    endpoint_url=url,
    region_name="us-east-1",
    aws_access_key_id="testing",
    aws_secret_access_key="testing",
)


def tags(kind, **kv):
    return [{"ResourceType": kind, "Tags": [{"Key": k, "Value": v} for k, v in kv.items()]}]


vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16", TagSpecifications=tags("vpc", Name="prod"))["Vpc"]["VpcId"]
subnets = {}
for name, cidr, zone in [
    ("public-a", "10.0.1.0/24", "us-east-1a"),
    ("public-b", "10.0.2.0/24", "us-east-1b"),
    ("private-a", "10.0.11.0/24", "us-east-1a"),
    ("private-b", "10.0.12.0/24", "us-east-1b"),
]:
    subnets[name] = ec2.create_subnet(
        VpcId=vpc, CidrBlock=cidr, AvailabilityZone=zone, TagSpecifications=tags("subnet", Name=name)
    )["Subnet"]["SubnetId"]

web = ec2.create_security_group(VpcId=vpc, GroupName="web", Description="web tier")["GroupId"]
db = ec2.create_security_group(VpcId=vpc, GroupName="db", Description="database tier")["GroupId"]
ec2.authorize_security_group_ingress(
    GroupId=db,
    IpPermissions=[{"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432, "UserIdGroupPairs": [{"GroupId": web}]}],
)
ec2.authorize_security_group_ingress(
    GroupId=web,
    IpPermissions=[{"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
)

igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
public_rt = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
ec2.create_route(RouteTableId=public_rt, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
nat_eip = ec2.allocate_address(Domain="vpc")["AllocationId"]
nat = ec2.create_nat_gateway(SubnetId=subnets["public-a"], AllocationId=nat_eip)["NatGateway"]["NatGatewayId"]
private_rt = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
ec2.create_route(RouteTableId=private_rt, DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat)
for name, sid in subnets.items():
    ec2.associate_route_table(RouteTableId=public_rt if name.startswith("public") else private_rt, SubnetId=sid)


def run(n, subnet, group, **kv):
    return [
        i["InstanceId"]
        for i in ec2.run_instances(
            ImageId="ami-12c6146b",
            InstanceType="t3.micro",
            MinCount=n,
            MaxCount=n,
            SubnetId=subnets[subnet],
            SecurityGroupIds=[group],
            TagSpecifications=tags("instance", **kv),
        )["Instances"]
    ]


run(2, "public-a", web, Name="web-a", Service="checkout", team="payments")
run(1, "public-b", web, Name="web-b", Service="checkout", team="payments")
run(1, "public-b", web, Name="front-b", Service="storefront", team="web")
dbs = run(1, "private-a", db, Name="ledger-a", app="ledger", team="payments")
dbs += run(1, "private-b", db, Name="ledger-b", app="ledger", team="payments")
vol = ec2.create_volume(AvailabilityZone="us-east-1a", Size=100)["VolumeId"]
ec2.attach_volume(VolumeId=vol, InstanceId=dbs[0], Device="/dev/sdf")
eip = ec2.allocate_address(Domain="vpc")["AllocationId"]
ec2.associate_address(AllocationId=eip, InstanceId=dbs[0])
print(f"built vpc {vpc}: {len(subnets)} subnets, 6 instances, NAT {nat}, IGW {igw} at {url}")
